//! t-of-N threshold (Mouchet, Bertrand, Hubaux 2022): each party Shamir-shares its secret s_i
//! with a random polynomial of degree t − 1 over R_QP and sends P_i(α_j) to party j (sealed, see
//! [`super::sealed`]). Party j sums what it receives into P(α_j), a share of s = P(0). Any t
//! parties T then hold additive shares λ_j·P(α_j) of s (λ_j the Lagrange coefficients of T at 0)
//! and run the N-out-of-N protocols among themselves. Party j also keeps each dealer's P_i(α_j):
//! λ_j·Σ_i w_i·P_i(α_j) is its additive share of any weighted key Σ_i w_i·s_i, which is what a
//! round's updates, each encrypted under its hospital's own s_i, sum to
//! ([`super::ReceiveSwitch::share_updates`]).

use std::sync::Arc;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ckks::CkksContext;
use crate::ring::{Poly, Prng};
use crate::rlwe::SecretKey;

use super::error::MultipartyError;

/// Largest party index: differences of evaluation points stay below every modulus (≥ 2^17).
pub const MAX_PARTY_INDEX: u32 = 65535;

/// Party `from`'s share of its secret for party `to`: P_from(α_to) over Q_L ∪ P (NTT domain).
/// Secret: it travels only sealed, and is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ShamirShare {
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) poly: Poly,
}

impl std::fmt::Debug for ShamirShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShamirShare {{ from: {}, to: {}, .. }}",
            self.from, self.to
        )
    }
}

impl ShamirShare {
    pub fn from(&self) -> u32 {
        self.from
    }
    pub fn to(&self) -> u32 {
        self.to
    }
}

fn check_indices(indices: &[u32]) -> Result<(), MultipartyError> {
    for (i, &x) in indices.iter().enumerate() {
        if x == 0 || x > MAX_PARTY_INDEX || indices[..i].contains(&x) {
            return Err(MultipartyError::PartyIndex(x));
        }
    }
    Ok(())
}

/// Shares party `from`'s secret among `parties` (its own index included) with threshold t.
pub fn deal(
    ctx: &Arc<CkksContext>,
    sk: &SecretKey,
    from: u32,
    parties: &[u32],
    threshold: usize,
    prng: &mut Prng,
) -> Result<Vec<ShamirShare>, MultipartyError> {
    if sk.fingerprint() != ctx.fingerprint() {
        return Err(MultipartyError::Foreign { what: "secret key" });
    }
    check_indices(parties)?;
    if !parties.contains(&from) {
        return Err(MultipartyError::NotActive(from));
    }
    if threshold == 0 || threshold > parties.len() {
        return Err(MultipartyError::Threshold {
            threshold,
            parties: parties.len(),
        });
    }
    let rl = ctx.rlwe();
    let ring = rl.ring();
    let basis = rl.key_basis();
    // P(z) = s + c_1·z + … + c_{t−1}·z^{t−1}
    let coeffs: Vec<Zeroizing<Poly>> = (1..threshold)
        .map(|_| Zeroizing::new(ring.sample_uniform(prng, basis)))
        .collect();
    let shares = parties
        .iter()
        .map(|&to| {
            // Horner from the top coefficient down to s
            let alpha: Vec<u64> = basis
                .iter()
                .map(|&i| ring.modulus(i).reduce(u64::from(to)))
                .collect();
            let mut v = match coeffs.last() {
                Some(top) => (**top).clone(),
                None => sk.poly().clone(),
            };
            if !coeffs.is_empty() {
                for c in coeffs.iter().rev().skip(1) {
                    ring.mul_scalar_assign(&mut v, &alpha, basis);
                    ring.add_assign(&mut v, c, basis);
                }
                ring.mul_scalar_assign(&mut v, &alpha, basis);
                ring.add_assign(&mut v, sk.poly(), basis);
            }
            ShamirShare { from, to, poly: v }
        })
        .collect();
    Ok(shares)
}

/// A party's threshold secret P(α_index) = Σ_i P_i(α_index), with each dealer's P_i(α_index).
/// Wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ThresholdSecret {
    pub(crate) index: u32,
    pub(crate) threshold: usize,
    pub(crate) poly: Poly,
    /// the dealers, ascending, and what each dealt this party (same order)
    pub(crate) dealers: Vec<u32>,
    pub(crate) dealt: Vec<Poly>,
    pub(crate) fingerprint: [u8; 32],
}

impl std::fmt::Debug for ThresholdSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ThresholdSecret {{ index: {}, threshold: {}, .. }}",
            self.index, self.threshold
        )
    }
}

impl ThresholdSecret {
    /// Combines the shares party `me` received, exactly one from every dealer in `dealers`.
    pub fn combine(
        ctx: &Arc<CkksContext>,
        me: u32,
        threshold: usize,
        dealers: &[u32],
        shares: &[ShamirShare],
    ) -> Result<Self, MultipartyError> {
        check_indices(dealers)?;
        if threshold == 0 || threshold > dealers.len() {
            return Err(MultipartyError::Threshold {
                threshold,
                parties: dealers.len(),
            });
        }
        let mut seen = Vec::with_capacity(shares.len());
        for s in shares {
            if s.to != me {
                return Err(MultipartyError::Misaddressed {
                    from: s.from,
                    to: s.to,
                    me,
                });
            }
            if !dealers.contains(&s.from) || seen.contains(&s.from) {
                return Err(MultipartyError::MissingShares {
                    expected: dealers.len(),
                    got: shares.len(),
                });
            }
            seen.push(s.from);
        }
        if seen.len() != dealers.len() {
            return Err(MultipartyError::MissingShares {
                expected: dealers.len(),
                got: shares.len(),
            });
        }
        let basis = ctx.rlwe().key_basis();
        if shares
            .iter()
            .any(|s| s.poly.limbs() != basis.len() || s.poly.n() != ctx.n())
        {
            return Err(MultipartyError::Shape("Shamir share"));
        }
        let mut sorted: Vec<&ShamirShare> = shares.iter().collect();
        sorted.sort_by_key(|s| s.from);
        Ok(Self::from_dealt(
            ctx,
            me,
            threshold,
            sorted.iter().map(|s| s.from).collect(),
            sorted.iter().map(|s| s.poly.clone()).collect(),
        ))
    }

    /// From what each dealer dealt `me` (dealers ascending and distinct, polynomials over the
    /// key basis: the caller checked).
    pub(crate) fn from_dealt(
        ctx: &CkksContext,
        me: u32,
        threshold: usize,
        dealers: Vec<u32>,
        dealt: Vec<Poly>,
    ) -> Self {
        let rl = ctx.rlwe();
        let basis = rl.key_basis();
        let mut poly = Poly::zero(ctx.n(), basis.len());
        for p in &dealt {
            rl.ring().add_assign(&mut poly, p, basis);
        }
        Self {
            index: me,
            threshold,
            poly,
            dealers,
            dealt,
            fingerprint: *ctx.fingerprint(),
        }
    }

    /// The dealers whose shares this secret holds, ascending.
    pub fn dealers(&self) -> &[u32] {
        &self.dealers
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    #[cfg(test)]
    pub(crate) fn raw_poly(&self) -> &Poly {
        &self.poly
    }

    /// This party's additive share of s when the parties `active` act together: λ·P(α_me).
    pub fn additive_share(
        &self,
        ctx: &Arc<CkksContext>,
        active: &[u32],
    ) -> Result<SecretKey, MultipartyError> {
        if &self.fingerprint != ctx.fingerprint() {
            return Err(MultipartyError::Foreign {
                what: "threshold secret",
            });
        }
        let lambda = lagrange_share(ctx, self.index, active, self.threshold)?;
        let rl = ctx.rlwe();
        let mut poly = self.poly.clone();
        rl.ring()
            .mul_scalar_assign(&mut poly, &lambda, rl.key_basis());
        Ok(SecretKey::from_poly(poly, *ctx.fingerprint()))
    }

    /// This party's additive shares of the weighted key Σ_i w_i·s_i when the parties `active`
    /// act together: λ·w_i·P_i(α_me) for each `(dealer i, w_i)` of `weights`, in that order.
    /// Summed over `active`, share i gives w_i·s_i, so a sum of ciphertexts each under its
    /// dealer's own s_i, weighted by w, switches with them.
    pub fn weighted_shares(
        &self,
        ctx: &Arc<CkksContext>,
        active: &[u32],
        weights: &[(u32, u64)],
    ) -> Result<Vec<SecretKey>, MultipartyError> {
        if &self.fingerprint != ctx.fingerprint() {
            return Err(MultipartyError::Foreign {
                what: "threshold secret",
            });
        }
        let lambda = lagrange_share(ctx, self.index, active, self.threshold)?;
        let rl = ctx.rlwe();
        let (ring, basis) = (rl.ring(), rl.key_basis());
        let mut seen = Vec::with_capacity(weights.len());
        weights
            .iter()
            .map(|&(dealer, w)| {
                let pos = self
                    .dealers
                    .binary_search(&dealer)
                    .map_err(|_| MultipartyError::NotDealer(dealer))?;
                if seen.contains(&dealer) {
                    return Err(MultipartyError::PartyIndex(dealer));
                }
                seen.push(dealer);
                let factor: Vec<u64> = basis
                    .iter()
                    .zip(&lambda)
                    .map(|(&i, &l)| {
                        let m = ring.modulus(i);
                        m.mul(l, m.reduce(w))
                    })
                    .collect();
                let mut poly = self.dealt[pos].clone();
                ring.mul_scalar_assign(&mut poly, &factor, basis);
                Ok(SecretKey::from_poly(poly, *ctx.fingerprint()))
            })
            .collect()
    }
}

/// The Lagrange coefficient at 0 of party `me` within `active`, per modulus of Q_L ∪ P:
/// λ = Π_{k ∈ active, k ≠ me} α_k / (α_k − α_me).
pub fn lagrange_share(
    ctx: &CkksContext,
    me: u32,
    active: &[u32],
    threshold: usize,
) -> Result<Vec<u64>, MultipartyError> {
    check_indices(active)?;
    if !active.contains(&me) {
        return Err(MultipartyError::NotActive(me));
    }
    if active.len() < threshold {
        return Err(MultipartyError::TooFewParties {
            got: active.len(),
            threshold,
        });
    }
    let rl = ctx.rlwe();
    Ok(rl
        .key_basis()
        .iter()
        .map(|&i| {
            let m = rl.ring().modulus(i);
            active.iter().filter(|&&k| k != me).fold(1u64, |acc, &k| {
                let num = m.reduce(u64::from(k));
                let den = m.sub(num, m.reduce(u64::from(me)));
                // indices are distinct and below every modulus, so den ≠ 0
                m.mul(acc, m.mul(num, m.inv(den).expect("distinct indices")))
            })
        })
        .collect())
}
