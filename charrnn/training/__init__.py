"""Training a model, the parts of the loop (the runner in charrnn/runner.py sets a job up
and runs it; a run directory's set-up is charrnn/run.py's):

    config.py    TrainConfig: every training setting, and the precision of a device
    schedule.py  the learning rate at each step: warmup, then cosine decay
    loop.py      fit(): the loop, a generator of Reports; evaluation and saving
    trainer.py   Job (what fit() takes) and Trainer: the step, rollback, exact resume
    meters.py    what the step sums on the device so that the host never waits for it
    reports.py   Progress, Saved and Report: what a run tells its caller
"""
