"""The wider family: optimizers that are steepest descent under a metric, a Bregman divergence or a proximal term
rather than one fixed norm. Each is a module; the functions are re-exported flat from :mod:`normopt`
(``normopt.dion``, ``normopt.fadam``, ...), so this package re-exports nothing and no function shadows a module.

* :mod:`normopt.family.dion`: Dion, low-rank orthonormalized updates with error feedback;
* :mod:`normopt.family.shampoo`: Shampoo, Kronecker-factored preconditioning;
* :mod:`normopt.family.eigenbasis`: SOAP and SPlus, Adam or sign descent in the eigenbasis of Shampoo's factors;
* :mod:`normopt.family.normuon`: NorMuon, a per-neuron second moment after any dualization;
* :mod:`normopt.family.hyperball`: MuonH and AdamH, every matrix kept on the sphere of its initial norm;
* :mod:`normopt.family.manifold`: manifold Muon, spectral steepest descent on the Stiefel manifold;
* :mod:`normopt.family.qk_clip`: QK-Clip / MuonClip, per-head rescaling of query/key weights that caps attention
  logits;
* :mod:`normopt.family.fadam`: FAdam, Adam as natural gradient with a diagonal Fisher;
* :mod:`normopt.family.newton`: damped Newton with full, diagonal or Kronecker curvature;
* :mod:`normopt.family.mirror`: mirror descent and exponentiated gradient;
* :mod:`normopt.family.prox`: proximal (ℓ1) and projection steps.
"""
