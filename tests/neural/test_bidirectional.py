"""ELMo-style bidirectional LM: the forward half is a causal LM, the cloze head never sees the word
it predicts, whole-stream backward/cloze scoring agrees with the batch computation, and it learns.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lmlab.corpus import EOS_ID
from lmlab.errors import LmlabError
from lmlab.neural.bidirectional import BidirectionalLM
from lmlab.neural.config import ModelConfig
from lmlab.neural.models import RecurrentLM, build_model, detach_state

from .test_models import VARIANTS, flat, gradcheck_model, train_on_cycle

torch.set_num_threads(1)

V = 11
CELLS = [pytest.param(dict(model="lstm", layers=2), id="lstm"),
         pytest.param(dict(model="gru", layers=2, residual=True), id="gru-residual"),
         pytest.param(dict(model="rnn_tanh", layers=1, tied=True), id="rnn_tanh-tied")]


def bilm(seed: int = 0, dtype=torch.float64, **kw) -> BidirectionalLM:
    base = dict(model="lstm", vocab_size=V, emsize=6, hidden=6, layers=2, dropout=0.0,
                bidirectional=True)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**{**base, **kw})).to(dtype)
    assert isinstance(model, BidirectionalLM)
    return model.eval()


def as_batch(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole stream as one [N, 1] batch (stream convention: </s> before the first word)."""
    inputs = torch.cat([torch.tensor([EOS_ID]), targets[:-1]])
    return inputs[:, None], targets[:, None]


@pytest.mark.parametrize("kw", CELLS)
def test_forward_logits_never_see_the_future(kw):
    model = bilm(**kw)
    x = torch.randint(V, (12, 3))
    state = model.init_state(3, "cpu")
    base, _ = model(x, state)
    assert base.shape == (12, 3, V)
    for t in (0, 5, 10):
        y = x.clone()
        y[t + 1:] = torch.randint(V, y[t + 1:].shape)
        torch.testing.assert_close(model(y, state)[0][:t + 1], base[:t + 1], rtol=0, atol=0)
    # and the loss's targets (the backward direction's input) do not touch the forward logits
    logits_via_loss = model.decoder(model._both(x, torch.randint(V, (12, 3)), state)[0])
    torch.testing.assert_close(logits_via_loss, base)


@pytest.mark.parametrize("kw", CELLS)
def test_forward_half_carries_its_state_across_chunks(kw):
    model = bilm(**kw)
    x = torch.randint(V, (9, 2))
    state0 = model.init_state(2, "cpu")
    whole, end = model(x, state0)
    a, s = model(x[:4], state0)
    b, s = model(x[4:], s)
    torch.testing.assert_close(torch.cat([a, b]), whole)
    # the state loss() returns is the forward state, the same as forward()'s
    _, s_loss = model.loss(x, torch.randint(V, (9, 2)), state0)
    for u, v in zip(flat(s_loss), flat(end), strict=True):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("kw", CELLS)
def test_cloze_at_t_does_not_see_the_word_at_t(kw):
    model = bilm(**kw)
    stream = torch.randint(3, V, (10,))
    inputs, targets = as_batch(stream)
    state = model.init_state(1, "cpu")
    base, _ = model.cloze_logits(inputs, targets, state)
    for k in (0, 4, 9):  # blank out (change) target k everywhere it occurs in the stream
        other = stream.clone()
        other[k] = 3 + (stream[k] - 3 + 1) % (V - 3)
        logits, _ = model.cloze_logits(*as_batch(other), state)
        changed = (logits != base).any(-1)[:, 0]
        # position k is blind to its own word; its neighbours see it (the test has power)
        assert not changed[k]
        assert changed[[j for j in (k - 1, k + 1) if 0 <= j < 10]].all()
    probs = F.softmax(base, dim=-1)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))


@pytest.mark.parametrize("kw", CELLS)
def test_whole_stream_scores_match_the_batch_computation(kw):
    model = bilm(**kw)
    stream = torch.randint(V, (13,))
    inputs, targets = as_batch(stream)
    state = model.init_state(1, "cpu")
    hf, hb, _ = model._both(inputs, targets, state)
    # backward: hb[t] has read targets[t:] and predicts inputs[t]; inputs[0] is the leading </s>
    want_bwd = F.log_softmax(model.decoder(hb[:, 0]), -1).gather(1, inputs)[:, 0]
    want_cloze = F.log_softmax(model.cloze_logits(inputs, targets, state)[0][:, 0], -1)
    for chunk in (2048, 5, 1):
        got_bwd = model.backward_logprobs(stream, chunk=chunk)
        torch.testing.assert_close(got_bwd, want_bwd)
        logp, pred = model.cloze_scores(stream, chunk=chunk)
        torch.testing.assert_close(logp, want_cloze.gather(1, stream[:, None])[:, 0])
        assert torch.equal(pred, want_cloze.argmax(-1))
    assert model.backward_logprobs(stream[:0]).shape == (0,)
    assert model.cloze_scores(stream[:0])[0].shape == (0,)


def test_backward_logprob_of_word_i_depends_only_on_the_words_after_it():
    model = bilm()
    stream = torch.randint(3, V, (10,))  # w_1..w_10; out[i] = log p(w_i | w_{i+1}..w_10)
    base = model.backward_logprobs(stream)
    assert base.shape == (10,) and (base < 0).all()
    other = stream.clone()
    other[4] = 3 + (stream[4] - 3 + 1) % (V - 3)  # w_5
    changed = (model.backward_logprobs(other) != base).tolist()
    assert changed == [i <= 5 for i in range(10)]


def test_scoring_restores_training_mode_and_is_deterministic():
    model = bilm(dropout=0.5).train()
    stream = torch.randint(V, (8,))
    a, b = model.backward_logprobs(stream), model.backward_logprobs(stream)
    assert torch.equal(a, b) and model.training
    assert torch.equal(model.cloze_scores(stream)[0], model.cloze_scores(stream)[0])
    assert model.training


def test_loss_is_the_mean_of_forward_backward_and_cloze():
    model = bilm()
    inputs, targets = torch.randint(V, (6, 2)), torch.randint(V, (6, 2))
    state = model.init_state(2, "cpu")
    loss, _ = model.loss(inputs, targets, state)
    parts = model.last_loss_parts
    assert set(parts) == {"forward", "backward", "cloze"}
    torch.testing.assert_close(loss.detach(), sum(parts.values()) / 3)
    # forward part == the plain LM loss through the public interface
    torch.testing.assert_close(parts["forward"], super(BidirectionalLM, model).loss(
        inputs, targets, state)[0].detach())
    hb = model._both(inputs, targets, state)[1]
    want_bwd = F.cross_entropy(model.decoder(hb).reshape(-1, V), inputs.reshape(-1))
    torch.testing.assert_close(parts["backward"], want_bwd.detach())


def test_backward_restarts_every_batch():
    """The backward direction sees only the batch: the loss does not depend on the carried state
    through its backward part, whatever state is carried."""
    model = bilm()
    inputs, targets = torch.randint(V, (6, 2)), torch.randint(V, (6, 2))
    s1 = model.init_state(2, "cpu")
    s2 = tuple(torch.randn_like(t) for t in s1)
    model.loss(inputs, targets, s1)
    b1 = model.last_loss_parts["backward"]
    model.loss(inputs, targets, s2)
    assert torch.equal(model.last_loss_parts["backward"], b1)
    assert not torch.equal(model.last_loss_parts["forward"], b1)


def test_structure_sharing_and_tying():
    model = bilm(tied=True, layers=1)
    assert model.decoder.weight is model.embedding.weight
    assert model.forward_rnn is not model.backward_rnn
    assert model.cloze_head.in_features == 2 * 6
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"embedding", "forward_rnn", "backward_rnn", "decoder", "cloze_head"}
    plain = build_model(ModelConfig(model="lstm", vocab_size=V, emsize=6, hidden=6, layers=1))
    assert isinstance(plain, RecurrentLM)


def test_config_errors():
    with pytest.raises(LmlabError, match="bidirectional"):
        bilm(model="nnlm")
    with pytest.raises(LmlabError, match="residual"):
        bilm(residual=True, emsize=4)


@pytest.mark.parametrize("kw", [dict(model="lstm", layers=1),
                                dict(model="rnn_tanh", layers=2, residual=True)])
def test_gradcheck(kw):
    gradcheck_model(bilm(**{"emsize": 3, "hidden": 3, "init_range": 0.7, **kw}).train())


@pytest.mark.skipif("fgr" not in VARIANTS, reason="lmlab.neural.cells (the LSTM variants) does "
                    "not import: reinstall lmlab (pip install -e .)")
def test_variant_bilm_chunks_and_cloze_blindness():
    model = bilm(variant="fgr")
    x = torch.randint(V, (7, 2))
    state0 = model.init_state(2, "cpu")
    assert len(state0) == 3  # fgr carries its gate activations
    whole, _ = model(x, state0)
    a, s = model(x[:3], state0)
    torch.testing.assert_close(torch.cat([a, model(x[3:], s)[0]]), whole)
    stream = torch.randint(3, V, (8,))
    base, _ = model.cloze_logits(*as_batch(stream), model.init_state(1, "cpu"))
    other = stream.clone()
    other[3] = 3 + (stream[3] - 3 + 1) % (V - 3)
    logits, _ = model.cloze_logits(*as_batch(other), model.init_state(1, "cpu"))
    assert torch.equal(logits[3], base[3]) and not torch.equal(logits[2], base[2])


def test_learns_all_three_tasks():
    model = bilm(dtype=torch.float32, emsize=16, hidden=16, layers=1).train()
    # T = 7, not a multiple of the cycle: batches start at every phase, so the backward direction
    # (restarted from zero in each batch) learns from every starting word, not just one
    first, last = train_on_cycle(model, steps=200, T=7)
    assert first > 0.8 * math.log(V) and last < 0.05 * first, (first, last)
    parts = model.last_loss_parts
    assert all(p < 0.2 for p in parts.values()), parts
    # on the whole stream: the backward LM and the cloze head are right almost everywhere
    stream = torch.tensor([3, 4, 5, 6, 7, 8, 9, 10]).repeat(6)
    model.eval()
    bwd = model.backward_logprobs(stream)
    assert bwd[1:].exp().mean() > 0.9  # bwd[0] predicts the leading </s>: unpredictable here
    logp, pred = model.cloze_scores(stream)
    assert (pred == stream).float().mean() > 0.95
    assert math.exp(-logp.mean()) < 1.5


def test_trainer_style_steps():
    """One trainer step as the trainer takes it: loss, backward, detach, next batch."""
    model = bilm(dtype=torch.float32).train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = model.init_state(2, "cpu")
    torch.manual_seed(0)
    batches = [(torch.randint(V, (5, 2)), torch.randint(V, (5, 2))) for _ in range(2)]
    losses = []
    for _ in range(10):  # the same two batches again and again: the loss must go down
        for inputs, targets in batches:
            loss, state = model.loss(inputs, targets, state)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state = detach_state(state)
            losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[1]  # fitted (first step's state differs: compare like with like)
    assert all(not t.requires_grad for t in flat(state))  # cut from the graph
    assert all(not torch.equal(a, b.detach())  # every weight took part and moved
               for a, b in zip(before, model.parameters(), strict=True))
