"""Audio input and the features the model reads."""
