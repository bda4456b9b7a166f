"""Model assembly: the joint CTC/attention phoneme recogniser of the recipe.

One class, ``CTCAttentionASR``, built from plain size keys (all of them top-level
keys in the YAML files). It keeps those keys in ``self.config`` so that a later
stage can rebuild the very same architecture from what a training run saved
(``save_teachers.py`` rebuilds every teacher this way, from ``model_config.json``).
"""

import json
import os

import speechbrain as sb
import torch
from speechbrain.decoders.scorer import CTCScorer, ScorerBuilder
from speechbrain.decoders.seq2seq import S2SRNNBeamSearcher, S2SRNNGreedySearcher
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.CRDNN import CRDNN
from speechbrain.nnet.RNN import GRU, LSTM, LiGRU

ENCODER_RNNS = {"ligru": LiGRU, "lstm": LSTM, "gru": GRU}
DECODER_RNNS = ("gru", "lstm")  # SpeechBrain's AttentionalRNNDecoder cells

# Written beside the label encoder in each run's save folder.
MODEL_CONFIG_FILE = "model_config.json"


class CTCAttentionASR(torch.nn.Module):
    """CRDNN encoder, CTC head and a location-aware attentional RNN decoder.

    Arguments
    ---------
    n_mels : int
        Input feature size (filterbank channels).
    output_neurons : int
        Size of the label set, blank/bos/eos included.
    enc_rnn_type : str
        Recurrent cell of the encoder: "ligru" (CRDNN's default), "lstm", "gru".
    dec_rnn_type : str
        Recurrent cell of the decoder: "gru" or "lstm".
    time_pooling_size : int
        Frames max-pooled into one after the CNN (2: 20 ms encoder frames, as
        the original recipe; 3 makes CPU-sized models faster).
    The remaining arguments are CRDNN / AttentionalRNNDecoder sizes and rates.
    """

    def __init__(
        self,
        n_mels=40,
        output_neurons=42,
        dropout=0.15,
        cnn_blocks=2,
        cnn_channels=(128, 256),
        cnn_kernelsize=(3, 3),
        time_pooling_size=2,
        rnn_layers=4,
        rnn_neurons=512,
        rnn_bidirectional=True,
        enc_rnn_type="ligru",
        dnn_blocks=2,
        dnn_neurons=512,
        emb_size=128,
        dec_neurons=256,
        dec_rnn_type="gru",
        dec_layers=1,
        attn_dim=256,
        attn_channels=10,
        attn_kernel_size=100,
        dec_dropout=0.5,
    ):
        super().__init__()
        if enc_rnn_type not in ENCODER_RNNS:
            raise ValueError(
                f"enc_rnn_type must be one of {sorted(ENCODER_RNNS)}, "
                f"got {enc_rnn_type!r}"
            )
        if dec_rnn_type not in DECODER_RNNS:
            raise ValueError(f"dec_rnn_type must be gru or lstm, got {dec_rnn_type!r}")
        self.config = {
            "n_mels": n_mels,
            "output_neurons": output_neurons,
            "dropout": dropout,
            "cnn_blocks": cnn_blocks,
            "cnn_channels": list(cnn_channels),
            "cnn_kernelsize": list(cnn_kernelsize),
            "time_pooling_size": time_pooling_size,
            "rnn_layers": rnn_layers,
            "rnn_neurons": rnn_neurons,
            "rnn_bidirectional": rnn_bidirectional,
            "enc_rnn_type": enc_rnn_type,
            "dnn_blocks": dnn_blocks,
            "dnn_neurons": dnn_neurons,
            "emb_size": emb_size,
            "dec_neurons": dec_neurons,
            "dec_rnn_type": dec_rnn_type,
            "dec_layers": dec_layers,
            "attn_dim": attn_dim,
            "attn_channels": attn_channels,
            "attn_kernel_size": attn_kernel_size,
            "dec_dropout": dec_dropout,
        }
        # With no CNN block CRDNN would see a (batch, time, n_mels) input
        # anyway; (128, 256) style tuples are cut to the number of blocks.
        self.enc = CRDNN(
            input_shape=[None, None, n_mels],
            activation=torch.nn.LeakyReLU,
            dropout=dropout,
            cnn_blocks=cnn_blocks,
            cnn_channels=tuple(cnn_channels)[:cnn_blocks] if cnn_blocks else (),
            cnn_kernelsize=tuple(cnn_kernelsize),
            time_pooling=True,
            time_pooling_size=time_pooling_size,
            rnn_class=ENCODER_RNNS[enc_rnn_type],
            rnn_layers=rnn_layers,
            rnn_neurons=rnn_neurons,
            rnn_bidirectional=rnn_bidirectional,
            dnn_blocks=dnn_blocks,
            dnn_neurons=dnn_neurons,
        )
        self.emb = sb.nnet.embedding.Embedding(
            num_embeddings=output_neurons, embedding_dim=emb_size
        )
        self.dec = sb.nnet.RNN.AttentionalRNNDecoder(
            rnn_type=dec_rnn_type,
            attn_type="location",
            hidden_size=dec_neurons,
            attn_dim=attn_dim,
            num_layers=dec_layers,
            enc_dim=dnn_neurons,
            input_size=emb_size,
            scaling=1.0,
            channels=attn_channels,
            kernel_size=attn_kernel_size,
            re_init=True,
            dropout=dec_dropout,
        )
        self.ctc_lin = sb.nnet.linear.Linear(
            input_size=dnn_neurons, n_neurons=output_neurons
        )
        self.seq_lin = sb.nnet.linear.Linear(
            input_size=dec_neurons, n_neurons=output_neurons
        )

    def forward(self, feats, wav_lens, tokens_bos):
        """Both heads at once (one call, so DDP sees every parameter used).

        Returns (encoded (batch, frames', dnn), CTC logits (batch, frames',
        output_neurons), decoder logits (batch, tokens + 1, output_neurons)).
        """
        encoded = self.encode(feats)
        return (
            encoded,
            self.ctc_logits(encoded),
            self.decoder_logits(encoded, wav_lens, tokens_bos),
        )

    def encode(self, feats):
        """(batch, frames, n_mels) normalised features -> (batch, frames', dnn)."""
        return self.enc(feats)

    def ctc_logits(self, encoded):
        """(batch, frames', dnn) -> CTC logits (batch, frames', output_neurons)."""
        return self.ctc_lin(encoded)

    def decoder_logits(self, encoded, wav_lens, tokens_bos):
        """Teacher-forced decoder logits (batch, tokens + 1, output_neurons).

        ``tokens_bos`` (batch, tokens + 1) holds bos then the reference labels;
        ``wav_lens`` (batch,) are relative lengths in [0, 1].
        """
        hidden, _ = self.dec(self.emb(tokens_bos), encoded, wav_lens)
        return self.seq_lin(hidden)

    def searcher(
        self,
        bos_index,
        eos_index,
        beam_size=1,
        ctc_weight=0.0,
        blank_index=None,
        **options,
    ):
        """A greedy (beam_size 1) or beam searcher over this model's decoder.

        ``ctc_weight`` > 0 (beam only) rescores hypotheses with the CTC head
        (joint CTC/attention decoding): score = (1 - w) attention + w CTC.
        """
        common = dict(
            embedding=self.emb,
            decoder=self.dec,
            linear=self.seq_lin,
            bos_index=bos_index,
            eos_index=eos_index,
            min_decode_ratio=options.pop("min_decode_ratio", 0.0),
            max_decode_ratio=options.pop("max_decode_ratio", 1.0),
        )
        if beam_size <= 1:
            return S2SRNNGreedySearcher(**common)
        if ctc_weight > 0:
            ctc = CTCScorer(self.ctc_lin, blank_index=blank_index, eos_index=eos_index)
            options["scorer"] = ScorerBuilder(
                full_scorers=[ctc], weights={"ctc": ctc_weight}
            )
        return S2SRNNBeamSearcher(beam_size=beam_size, **common, **options)


def make_features(sample_rate=16000, n_fft=400, n_mels=40):
    """The filterbank front end every model of the recipe uses."""
    return Fbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels)


def write_model_config(save_folder, hparams, model):
    """Saves what a later stage needs to rebuild this run's model on its own.

    Written to ``<save_folder>/model_config.json`` beside ``label_encoder.txt``;
    the checkpoints in the same folder hold the weights and the normalisation
    statistics.
    """
    config = {
        "model": model.config,
        "features": {
            "sample_rate": hparams["sample_rate"],
            "n_fft": hparams["n_fft"],
            "n_mels": hparams["n_mels"],
        },
        "blank_index": hparams["blank_index"],
        "bos_index": hparams["bos_index"],
        "eos_index": hparams["eos_index"],
        "phn_set": hparams["phn_set"],
        "label_encoder": "label_encoder.txt",
        "hyperparams": os.path.relpath(
            os.path.join(hparams["output_folder"], "hyperparams.yaml"), save_folder
        ),
    }
    path = os.path.join(save_folder, MODEL_CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, path)
    return path
