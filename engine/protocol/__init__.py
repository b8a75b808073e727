"""The run-directory protocol and what runs on every host: torch-free and NumPy-free (lenstui imports it)."""
