"""fleet learner."""
