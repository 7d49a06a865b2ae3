"""The method, independent of any model: gate space, predictor, straight-through gates, sparsity, skipping."""
