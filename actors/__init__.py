"""fleet actors."""
