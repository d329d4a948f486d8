"""The W+ adapter trainer (both stages of the paper). Entry point: `python trainer/train.py`."""
