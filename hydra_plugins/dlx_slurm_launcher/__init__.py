"""dlx's Slurm launcher (`hydra/launcher=slurm`): hydra-submitit-launcher's, the request checked
against the cluster first and the jobs followed without Slurm accounting where there is none."""
