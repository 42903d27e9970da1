FROM a
COPY -- src dst
COPY --  --from=x src dst
COPY -x src dst
COPY --bare src dst
COPY --=empty src dst
COPY --from=a--b src dst
CMD --flag=1 echo
EXPOSE --x 80
USER --u=1 me
