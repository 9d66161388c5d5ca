"""Small helpers shared by the training scripts: TensorBoard, checkpoints, metrics."""
