"""From shards to arrays: manifests, the stamp cache, preprocessing, the shortcut gates. NumPy, pandas, pyarrow, scikit-learn."""
