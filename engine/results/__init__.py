"""What the runs mean: §6 verdicts, the §10 decision, the run that stands for an experiment, the report. Torch-free and NumPy-free (lenstui imports it)."""
