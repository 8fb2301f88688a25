"""Training and pipeline stages, one readable module each (midtrain, sft, ...).

Every stage reads input folders and writes an output folder with ``manifest.json``; a stage module shows its recipe top
to bottom and takes a typed config. Import the stage you need (``from posttrain.stages.sft import run_sft``): this
package imports nothing heavy by itself.
"""
