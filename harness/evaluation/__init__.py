"""Evaluation: scoring generations, statistics, reading scored runs, the regression gate, lm-eval."""
