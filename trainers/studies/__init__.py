"""The programs and data of the project's own studies (`python -m trainers.studies.<name>`).

The budgets and variants of the paper's reproduction (`budgets`), its report
and figures, the zoo's release and leaderboard, the λ sweep, the seed study
and its comparison, and the docs' generated tables. They train and evaluate
with the functions the user programs run (`trainers.training`,
`trainers.evaluating`); no program imports another.
"""
