"""Looking at the results: `Interpretation` (selections, metrics, plots) and `report.html`."""
