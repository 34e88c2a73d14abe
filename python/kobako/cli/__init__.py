"""kobako's command line: ``docker``'s verbs and flags, one thin module per verb."""
