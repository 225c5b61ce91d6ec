"""Data recipes: synthesize, filter, deduplicate, mix and split training data (issue 26).

One function per data step, each a plain function a worker calls on the step's spec part
(engine.recipes.specs) and its input files, returning the dataset it produced as an artifact
folder with a manifest (engine.recipes.manifest), or the cached one when the same step already
ran on the same inputs:

- generate.generate(GenerateSpec, root, progress=, cancel=, threads=): a local teacher GGUF
  writes conversations, Q&A pairs or preference pairs from seeds and document passages
  (passages, tasks, teacher); cancel and run again to resume;
- filters.filter_rows(FilterSpec, source, root, progress=, cancel=, threads=): by length,
  regular expression, or an engine.eval scorer (the judge);
- dedup.deduplicate(DedupSpec, source, root, progress=, cancel=): exact and MinHash near
  duplicates, and contamination against another dataset;
- mix.mix(MixSpec, sources, root) and mix.split(SplitSpec, source, root);
- worker: `python -m engine.recipes.worker STEP_DIR`, one step as the supervisor starts it.

This wing sits beside engine.training: it may import the data, models, eval and chat wings and
the core, and nothing above (not training, store, sweep, supervisor or cluster).
"""
