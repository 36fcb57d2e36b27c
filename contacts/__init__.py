"""The contacts CSV: reading and checking it into merge sets (`csv_reader`), grouping a large one
without holding it in memory (`index`), and building one from DevRev (`duplicate_finder`)."""
