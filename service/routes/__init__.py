"""One router per resource: inference, models, health."""
