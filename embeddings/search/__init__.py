"""Search: the `Searcher` over a catalogue's indexes (`searcher`) and the query it runs
(`query`)."""
