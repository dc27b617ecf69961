"""The exercise tests: one file and one pytest marker per exercise (see minilottery/coursework.py)."""
