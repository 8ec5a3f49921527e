"""Whisper adapter: exact sequence log-probs, encoder once per audio, frozen-encoder cache."""

from pathlib import Path

import pytest
import torch

from conftest import espeak_wav
from lpo_speech.adapters.whisper import WhisperAdapter
from lpo_speech.recipe import ModelConfig
from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    return [espeak_wav(d / "a.wav", "Please turn the kitchen lights off."),
            espeak_wav(d / "b.wav", "The farmer sings twice a week.", pitch=70)]


def pair(i, audio, chosen, rejected):
    return PreferencePair(id=f"p{i}", audio=str(audio), chosen_text=chosen, rejected_text=rejected)


def naive_logps(model, feats, prefix, text_ids):
    """The plain transformers way: full logits, log_softmax, average over the response tokens."""
    ids = torch.tensor([prefix + text_ids])
    logits = model(input_features=feats[None], decoder_input_ids=ids[:, :-1]).logits
    logp = torch.log_softmax(logits.float(), -1)[0, len(prefix) - 1:].gather(1, ids[0, len(prefix):, None])
    return logp.mean().item()


def test_logps_match_naive_and_encoder_runs_once_per_audio(whisper_tiny, audio):
    ad = WhisperAdapter(ModelConfig(path=str(whisper_tiny), adapter="whisper"))
    pm = ad.load(str(whisper_tiny), torch.device("cpu")).eval()
    assert ad.prefix == [50257, 50362]  # <|startoftranscript|><|notimestamps|> for tiny.en
    pairs = [pair(0, audio[0], "Please turn the kitchen lights off.", "Please turn the kitten lights of."),
             pair(1, audio[0], "Please turn the kitchen lights off.", "Turn it off."),
             pair(2, audio[1], "The farmer sings twice a week.", "The former sinks twice a week.")]
    items = [ad.encode(p, "t", Path("/")) for p in pairs]
    batch = ad.collate(items)
    assert batch["input_features"].shape[0] == 2 and batch["audio_index"].tolist() == [0, 0, 1]
    with torch.no_grad():
        out = pm(batch)
        for i, it in enumerate(items):
            feats = ad.features(it["audio"]).float()
            assert out.chosen[i].item() == pytest.approx(naive_logps(pm.model, feats, it["prompt"], it["chosen"]), abs=1e-4)
            assert out.rejected[i].item() == pytest.approx(naive_logps(pm.model, feats, it["prompt"], it["rejected"]), abs=1e-4)
    # the model hears the audio: the true transcript beats the corrupted ones
    assert (out.chosen > out.rejected).all()
    pm.prepare_for_sharding()  # FSDP's path: cross-attention projected per row inside the decoder
    with torch.no_grad():
        per_row = pm(batch)
    assert per_row.chosen.tolist() == pytest.approx(out.chosen.tolist(), abs=1e-5)
    assert per_row.rejected.tolist() == pytest.approx(out.rejected.tolist(), abs=1e-5)
    assert out.chosen_nll.tolist() == pytest.approx((-out.chosen).tolist(), abs=1e-5)  # averaged: NLL = -logp


def test_frozen_encoder_cache_gives_the_same_logps_and_no_encoder_grads(whisper_tiny, audio):
    p = [pair(0, audio[0], "Please turn the kitchen lights off.", "Please turn the kitten lights of.")]
    outs = []
    for frozen in (False, True):
        ad = WhisperAdapter(ModelConfig(path=str(whisper_tiny), adapter="whisper", freeze_encoder=frozen))
        pm = ad.load(str(whisper_tiny), torch.device("cpu"))
        batch = ad.collate([ad.encode(x, "t", Path("/")) for x in p])
        assert ("encoder_states" in batch) == frozen
        out = pm(batch)
        (out.chosen - out.rejected).sum().backward()
        enc_grad = pm.model.get_encoder().layers[0].fc1.weight.grad
        assert (enc_grad is None) == frozen
        outs.append(out.chosen.item())
    assert outs[0] == pytest.approx(outs[1], abs=2e-3)  # cache is fp16


def test_bad_audio_is_one_line(whisper_tiny, tmp_path):
    ad = WhisperAdapter(ModelConfig(path=str(whisper_tiny), adapter="whisper"))
    ad.load(str(whisper_tiny), torch.device("cpu"))
    with pytest.raises(UserError, match=r"pairs.jsonl:3: .*missing.wav: audio file not found"):
        ad.encode(pair(0, "missing.wav", "a", "b"), "pairs.jsonl:3", tmp_path)
    (tmp_path / "noise.wav").write_bytes(b"not audio" * 100)
    with pytest.raises(UserError, match=r"pairs.jsonl:4: .*noise.wav: cannot read audio"):
        ad.encode(pair(0, "noise.wav", "a", "b"), "pairs.jsonl:4", tmp_path)


def test_decoding_samples_and_beam_n_best_from_cached_states(whisper_tiny, audio):
    """N samples and the beam's N best per utterance from precomputed encoder states (what build-pairs
    does): N transcripts each, the beams distinct and led by the beam search's top-1, samples seeded."""
    from lpo_speech.asr.decode import AsrDecoder
    from lpo_speech.audio import load_audio

    dec = AsrDecoder(str(whisper_tiny))
    states = dec.encode([load_audio(p, sample_rate=16_000) for p in audio])
    beams = dec.transcribe(states=states, n=3, num_beams=3)
    assert [len(b) for b in beams] == [3, 3] and all(len(set(b)) == 3 for b in beams)
    assert [b[0] for b in beams] == [t[0] for t in dec.transcribe(states=states, num_beams=3)]
    assert "kitchen" in beams[0][0].lower()
    torch.manual_seed(0)
    samples = dec.transcribe(states=states, n=4, do_sample=True, temperature=1.0)
    torch.manual_seed(0)
    assert dec.transcribe(states=states, n=4, do_sample=True, temperature=1.0) == samples
    assert [len(s) for s in samples] == [4, 4] and all(t.strip() for s in samples for t in s)


def test_english_only_whisper_takes_en_transcribe_and_refuses_others(whisper_tiny, audio, tmp_path):
    """A recipe written for a multilingual Whisper (language en, task transcribe) runs on tiny.en as it
    is; another language is one line; a trained model keeps the language and task it was taught."""
    from lpo_speech.asr.decode import AsrDecoder
    from lpo_speech.audio import load_audio

    dec = AsrDecoder(str(whisper_tiny), language="en", task="transcribe")
    assert dec.language is None and "kitchen" in dec.transcribe([load_audio(audio[0], sample_rate=16_000)])[0][0].lower()
    with pytest.raises(UserError, match="English-only Whisper: model.language must be en or null"):
        WhisperAdapter(ModelConfig(path=str(whisper_tiny), adapter="whisper", language="de")).load(
            str(whisper_tiny), torch.device("cpu"))
