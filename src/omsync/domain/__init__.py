"""Pure domain rules: no I/O, standard library only."""
