"""`llm-carbon-exporter diagnose`: what the figures need from the upstream, checked one line at a
time. `probe` reads the upstream (the only I/O); `inventory` turns what it read into plain
facts; `checks`, `served` and `context` judge the facts (pure functions); `verdict` puts the
checklist together. `exposition.checklist` prints it."""
