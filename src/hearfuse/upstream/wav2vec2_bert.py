"""w2v-BERT 2.0 (Seamless Communication, 2023): a conformer trained self-supervised on 4.5M hours."""

from .registry import CheckpointInfo, feature_encoder_family

WAV2VEC2_BERT = feature_encoder_family(
    "wav2vec2_bert",
    {"facebook/w2v-bert-2.0": CheckpointInfo(1024, 25, "600M conformer, 4.5M h, 143 languages", first_center_ms=17.5)},
    "w2v-BERT 2.0 (transformers Wav2Vec2BertModel), stacked 80-bin fbank input",
)
