"""Training and evaluating the classifier: model, augmentation, the step, the metrics of a split, the trainer. torch."""
