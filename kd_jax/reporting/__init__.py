"""Reporting: results.json, run tables, sweep reports, plots, statistics and efficiency."""
