FROM a
ENV A    b   c   
ENV	B		c d
ENV C "quoted legacy" rest
