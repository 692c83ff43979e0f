"""Agent: the MPC agent that plans with a latent world model, its evaluation harness and the CLI."""
