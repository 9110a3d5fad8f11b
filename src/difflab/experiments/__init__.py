"""The seeds' experiments as one command each: the baseline comparison with the trilemma (seed 000) and the DDPM ablation (seed 002).

compare.py (`compare`, `CompareRequest`), budget.py (`train_with_budget`), trilemma.py, scoring.py (`Scorer`),
ablation.py (`run_ablation`, `AblationRequest`, `CELLS`), runs.py (any run as an image generator), plots.py.
"""
