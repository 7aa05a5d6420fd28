"""Evaluating a router through its public API: accuracy reports and plots."""
