"""What users run: `cli` (the command line), `course` (the notebooks headlessly),
`widgets` (the dashboard of notebook 09), `diagrams` (architecture figures) and
`bench` (training-path speeds)."""
