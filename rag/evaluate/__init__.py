"""Offline evaluation: labelled datasets in, stored and comparable runs out.

``datasets`` reads the project's JSONL format and the BEIR layout, ``runner`` drives the
real pipeline over a database of the dataset's own, ``metrics`` and ``summary`` turn
per-question results into the run's figures, ``store`` keeps runs in
``eval.data_dir/runs.db``, ``calibrate`` sweeps the evidence gate and ``report`` writes
the HTML page.
"""
