"""Teachers: obtained (trained, restored, pretrained), identified, cached, ensembled; and what the student trains on."""
