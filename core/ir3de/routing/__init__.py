"""Routing prompts through a fitted state: selectors, conversation evidence, tuning and calibration math."""
