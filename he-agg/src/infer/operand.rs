//! A model's weights and constants: in the clear or encrypted (P and C, a backend's plaintext and
//! ciphertext types), and converted from one backend to another.

/// A weight or constant, in the clear or encrypted (P and C: a backend's plaintext and
/// ciphertext, host-side here).
#[derive(Clone, Debug)]
pub(crate) enum Operand<P, C> {
    Plain(P),
    Cipher(C),
}

/// A scalar applied to every slot.
#[derive(Clone, Debug)]
pub(crate) enum Scalar<C> {
    Plain(f64),
    Cipher(C),
}

impl<C> Scalar<C> {
    pub(crate) fn try_map<C2, X>(
        &self,
        fc: &mut impl FnMut(&C) -> Result<C2, X>,
    ) -> Result<Scalar<C2>, X> {
        Ok(match self {
            Scalar::Plain(v) => Scalar::Plain(*v),
            Scalar::Cipher(c) => Scalar::Cipher(fc(c)?),
        })
    }
}

impl<P, C> Operand<P, C> {
    pub(crate) fn try_map<P2, C2, X>(
        &self,
        fp: &mut impl FnMut(&P) -> Result<P2, X>,
        fc: &mut impl FnMut(&C) -> Result<C2, X>,
    ) -> Result<Operand<P2, C2>, X> {
        Ok(match self {
            Operand::Plain(p) => Operand::Plain(fp(p)?),
            Operand::Cipher(c) => Operand::Cipher(fc(c)?),
        })
    }
}
