"""Workers on other machines: they claim, report and stream logs through the daemon's HTTP API."""
