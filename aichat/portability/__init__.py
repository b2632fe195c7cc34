"""Export and import of a user's own data (docs/api.md §12).

- `document`: the export as one JSON document, written piece by piece;
- `markdown`: the same sessions as a zip of Markdown files, also written piece by piece;
- `plan`: what an import will write, checked whole before anything is;
- `ours`, `chatgpt`: the two formats an import reads, each into a `plan.Plan`.
"""
