"""The app's widgets, one per file, named for the part of the screen they draw."""
