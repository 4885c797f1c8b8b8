"""Quickstart: embed audio with a preset through the HEAR API, and list the presets.

Runs offline: the `crepe` preset's weights ship with the package. Presets with
wav2vec2/HuBERT members need their weights in the Hugging Face cache (see README).
"""

import math

import torch

import hearfuse
from hearfuse import presets

# Two 2-second test sounds at 16 kHz: a 440 Hz and a 220 Hz tone.
t = torch.arange(2 * 16000) / 16000
audio = torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in (440.0, 220.0)])

model = hearfuse.load_model("crepe")
embeddings, timestamps = hearfuse.get_timestamp_embeddings(audio, model)
scene = hearfuse.get_scene_embeddings(audio, model)
print(f"timestamp embeddings {tuple(embeddings.shape)}, first timestamps {timestamps[0, :3].tolist()} ms")
print(f"scene embeddings {tuple(scene.shape)}")
similarity = torch.nn.functional.cosine_similarity(scene[0], scene[1], dim=0)
print(f"cosine similarity of the two tones' scene embeddings: {similarity:.3f}")

print("\npreset                 members                                                      dims (ts/scene)  weights here")
for name in presets.names():
    info = presets.describe(presets.get(name))
    members = " + ".join(m.split(" ")[0].split("/")[-1] for m in info["members"])
    dims = f"{info['timestamp_embedding_size']}/{info['scene_embedding_size']}"
    print(f"{name:22} {members:60} {dims:16} {'yes' if info['weights_available'] else 'no'}")
