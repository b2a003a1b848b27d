"""mT5 baseline (Hugging Face Transformers + Accelerate); the GLM stack never imports this package."""
