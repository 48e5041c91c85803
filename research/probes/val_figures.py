"""Val figures and training minutes of model cards, without their test figures (choosing on val, never on test).

    .venv/bin/python research/probes/val_figures.py runs/NAME/NAME.json [...]
"""
import json
import sys

for path in sys.argv[1:]:
    card = json.load(open(path))
    val, training = card["metrics"]["val"], card["training"]
    minutes = training.get("wall_seconds_all_stages", training["wall_seconds"]) / 60
    print(f"{card['name']}: val age MAE {val['age_mae']:.3f} (SE {val['age_mae_se']:.3f}), val gender "
          f"{100 * val['gender_accuracy']:.2f} %, train minutes {minutes:.1f} (epochs {training.get('epochs_completed')}, "
          f"stopped by budget: {training.get('stopped_by_budget')})")
