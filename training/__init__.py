"""Training: the data the Music Transformer learns from, and the trainer that teaches it.

Chord symbols (`chords`), the lead-sheet readers (`leadsheets`), our own jazz and ambient realisers
(`jazz`, `ambient`), the corpus → token-shard builder (`dataset`) and the resumable trainer with its
export (`train`). It builds on `generator`; the runtime (`generator`, `bot`, `jobs`, `storage`) never
imports it.
"""
