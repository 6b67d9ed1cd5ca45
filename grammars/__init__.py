"""The specc grammar, shipped inside the package as specc.grammars."""
