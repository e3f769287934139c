"""One line of help per :class:`~engine.training.config.TrainConfig` field, for ``fieldmark train --help`` and the
app's Train form (``TrainConfig.field_help()``)."""

FIELD_HELP = {
    "data": "image folder (class sub-folders, train/test folders or CUB_200_2011)",
    "out": "run folder to write",
    "model": "registered model name (fieldmark models)",
    "method": "mcloss (mutual-channel loss), ce (plain cross-entropy), tasn, or parts (K shared parts, PDiscoNet)",
    "xi": "channels per class, ξ (paper: 3)",
    "parts": "shared parts K of the parts method (PDiscoNet: 4, 8 or 16)",
    "fine": "stride-16 part maps: the last stage upsampled and joined with the stage before (default: on for mcloss "
            "and parts)",
    "padding": "how the backbone's convolutions pad: zeros (torchvision), replicate or reflect (default: replicate for "
               "mcloss, whose diversity term otherwise parks part peaks on the frame's edge; zeros for the others)",
    "mu": "MC-Loss weight μ (default 0.5 fine-tuning, 1.5 from scratch; the paper's fine-tuning 0.005 leaves L_dis "
          "at chance, docs/RESULTS.md#mcloss-mu)",
    "lam": "MC-Loss diversity weight λ (paper: 10)",
    "mc_conc": "weight of Fieldmark's concentration term on the true class's channels, which keeps each part compact "
               "(not in the paper; default 3000 fine-tuning, 0 from scratch; 0 turns it off, docs/RESULTS.md#mcloss-spread)",
    "zoom": "shared parts: find the bird from the background part, then look again at the square around it with "
            "this margin (a share of the bird's side, e.g. 0.15; 0 off); maps stay in the photo's coordinates",
    "gain": "GAIN attention mining (ce, mcloss, parts): erase what the true class's Grad-CAM attends to and "
            "penalise the class's score on what is left, so the attention covers all the evidence (off by default)",
    "gain_alpha": "GAIN: weight α of the attention-mining loss (default 1, the paper's)",
    "gain_sigma": "GAIN: threshold σ of the soft mask on the attention scaled to [0, 1] (default 0.5)",
    "gain_omega": "GAIN: steepness ω of the soft mask (default 10)",
    "attention": "attention blocks after the backbone's last two stages: cbam or residual (partnet models; "
                 "they start as the identity, so a pretrained backbone starts unchanged; default none)",
    "rotate": "rotate each training photo by a random angle up to ± this many degrees after the crop (default 0; "
              "the PDiscoNet authors use 90)",
    "equiv_backprop": "parts: back-propagate through the equivariance pass on the transformed photos, as the "
                      "authors (default off: that pass is a fixed target, and a step costs 1.5x a CE step instead "
                      "of 2.1-2.35x, docs/RESULTS.md#parts-step)",
    "epochs": "number of passes over the training images",
    "img_size": "training image size in pixels",
    "batch_size": "images per step",
    "pretrained": "torchvision weights name (DEFAULT, IMAGENET1K_V1) or a local .pth/.safetensors file",
    "lr_backbone": "learning rate of the backbone (default 0.001 fine-tuning, 0.05 from scratch; parts: 2e-4, Adam)",
    "lr_head": "learning rate of the new layers (default 0.05; TASN fine-tuning 0.01; parts: 2e-2, Adam)",
    "seed": "random seed (split, initialisation, augmentation)",
    "test_fraction": "share of each class held out for testing when the folder has no split of its own",
    "validation_fraction": "share of each class's training photos held out as a validation split, for choosing "
                           "settings without looking at the test photos (default 0: none; saved in split.json; "
                           "`fieldmark evaluate --split val` scores it)",
    "device": "auto, cpu, cuda, cuda:N or mps",
}
