"""specc's own MNIST classifier (spec, canonical weights, test-set feature
statistics), shipped as package data for specc.scoring; see README.md."""
