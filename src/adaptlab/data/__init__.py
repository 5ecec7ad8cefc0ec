"""Reading, checking and splitting data: readers (files), builtins (packaged datasets), columns, split."""
