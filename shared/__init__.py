"""What the services of the COTN delivery monitor share: catalogue, events, subjects, health."""
