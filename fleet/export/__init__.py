"""Recorded episodes in the formats other robot-learning tools read (LeRobotDataset v3.0)."""
