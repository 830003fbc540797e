"""fractal_ext: fast, checkpoint-compatible Fractal Generative Models (FractalAR / FractalMAR)."""
__version__ = "0.1.0"
