"""V-JEPA in-domain pretraining: weights in the transformers VJEPA2 format, multi-block masking, the
context/target/predictor model, its training loop (`jepa-agent pretrain`) and the probe heads."""
