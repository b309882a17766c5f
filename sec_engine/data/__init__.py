"""Reading labelled text, and the data-optimization techniques (ADA, TAL)."""
